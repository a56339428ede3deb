//! `sagan train-classifier`: the Fashion-MNIST classifier behind the default FID and IS.
use crate::cli::TrainClassifierArgs;
use crate::error::Result;
use crate::metrics::classifier;

pub fn run(args: TrainClassifierArgs) -> Result<u8> {
    let acc = classifier::train(&args.data, &args.out, args.epochs, tch::Device::Cpu)?;
    println!(
        "classifier: test accuracy {:.2}% -> {}",
        acc * 100.0,
        args.out.display()
    );
    Ok(0)
}
