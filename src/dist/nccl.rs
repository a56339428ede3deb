//! NCCL backend (CUDA tensors), through cudarc.
