// Tells sagan when a parameter's gradient is complete during backward, so that its gradient
// bucket can be all-reduced while backward goes on, and sums a tensor's gradient over the ranks
// during backward (cross-replica batch norm); tch binds no autograd hooks.
//
// libtorch runs a leaf's post-accumulate-grad hook right after it has added the leaf's gradient
// into `.grad`, on the thread executing that part of the graph (the caller's for CPU tensors, the
// device's autograd thread for CUDA tensors). Exceptions never cross into Rust.
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>

extern "C" {
typedef void (*sagan_grad_ready_fn)(void* ctx, size_t index);
// Sums `grad` over the ranks in place (a handle to the hook's own copy of the gradient).
typedef void (*sagan_reduce_grad_fn)(void* ctx, at::Tensor* grad);
}

namespace {

struct GradReady final : torch::autograd::PostAccumulateGradHook {
  GradReady(sagan_grad_ready_fn fn, void* ctx, size_t index) : fn(fn), ctx(ctx), index(index) {}
  void operator()(const torch::autograd::Variable& /*param*/) override { fn(ctx, index); }
  sagan_grad_ready_fn fn;
  void* ctx;
  size_t index;
};

void copy_message(const char* what, char* err, size_t err_len) {
  if (err_len == 0) return;
  std::strncpy(err, what, err_len - 1);
  err[err_len - 1] = '\0';
}

}  // namespace

extern "C" {

// Replaces `param`'s post-accumulate-grad hook by one calling `fn(ctx, index)`. Returns 0, or 1
// with libtorch's message in `err`.
int sagan_set_grad_ready_hook(const at::Tensor* param, sagan_grad_ready_fn fn, void* ctx,
                              size_t index, char* err, size_t err_len) {
  try {
    torch::autograd::impl::set_post_acc_grad_hooks(
        *param, std::make_unique<GradReady>(fn, ctx, index));
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, err_len);
    return 1;
  }
}

// Adds a hook to the non-leaf `t` that replaces the gradient flowing back into it by its sum over
// the ranks (`fn` reduces a copy in place). Cross-replica batch norm's statistics use it: their
// gradient must come from every rank's loss. Returns 0, or 1 with libtorch's message in `err`.
int sagan_add_reduce_grad_hook(const at::Tensor* t, sagan_reduce_grad_fn fn, void* ctx, char* err,
                               size_t err_len) {
  try {
    t->register_hook([fn, ctx](const at::Tensor& grad) {
      at::Tensor summed = grad.clone();
      fn(ctx, &summed);
      return summed;
    });
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, err_len);
    return 1;
  }
}

// Removes `param`'s post-accumulate-grad hook, if any.
void sagan_clear_grad_ready_hook(const at::Tensor* param) {
  try {
    torch::autograd::impl::set_post_acc_grad_hooks(*param, nullptr);
  } catch (...) {
  }
}

}  // extern "C"
