//! Only the training thread runs libtorch's intra-op (OpenMP) threads: the loader's threads keep
//! their libtorch ops to themselves. Its own test binary, so that no other test's threads count.
use sagan::data::packed::{PackedFile, PackedWriter};
use sagan::data::{Dataset, DistributedSampler, Loader, LoaderOptions};

/// Threads of this process whose name starts with `prefix` (OpenMP workers take the name of the
/// thread that started their team).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn loader_threads_start_no_openmp_teams() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("one core: libtorch starts no OpenMP team anywhere, nothing to check");
        return;
    }
    sagan::host::cpu_threads::pin_training_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sagan");
    let mut w = PackedWriter::create(&path, 1, 32).unwrap();
    for i in 0..256usize {
        w.push(&vec![i as u8; w.image_bytes()], (i % 4) as u32)
            .unwrap();
    }
    w.finish((0..4).map(|c| c.to_string()).collect(), "test".into(), 0)
        .unwrap();
    let data = Dataset::from_packed(PackedFile::open(&path, true, 1).unwrap());
    // 64 images of 32 x 32: the batch tensor (65,536 floats) is above libtorch's grain size, so
    // creating it would split across a team if the thread had one.
    let sampler = DistributedSampler::one_rank(data.len(), 64, 1);
    let opts = LoaderOptions {
        batch_per_rank: 64,
        start_batch: 0,
        prefetch: 2,
        workers: 2,
        flip: true,
    };
    let mut loader = Loader::new(&data, sampler, &opts, tch::Device::Cpu);
    for _ in 0..6 {
        assert_eq!(loader.next_batch().unwrap().images.size(), [64, 1, 32, 32]);
    }
    assert_eq!(
        threads_named("sagan-loader"),
        2,
        "the loader's threads started OpenMP workers of their own"
    );
    // The training thread keeps its two threads.
    assert_eq!(tch::get_num_threads(), 2);
}
