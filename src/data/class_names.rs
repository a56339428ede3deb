//! The datasets' class names, in label order: the row labels of sample grids.
use crate::config::DatasetKind;

/// Fashion-MNIST's classes, in label order.
pub const FASHION_MNIST: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// CIFAR-10's classes, in label order (batches.meta.txt).
pub const CIFAR10: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The names of the dataset's classes when it has names for exactly `num_classes` classes (a
/// config that reuses a format for other data, e.g. 1,000 ImageNet classes, gets numbers).
pub fn class_names(dataset: DatasetKind, num_classes: i64) -> Option<&'static [&'static str]> {
    #[allow(unreachable_patterns)] // datasets added later have no names until someone adds them
    let names: &'static [&'static str] = match dataset {
        DatasetKind::FashionMnist => &FASHION_MNIST,
        DatasetKind::Cifar10 => &CIFAR10,
        _ => return None,
    };
    (names.len() as i64 == num_classes).then_some(names)
}

/// The label of each class in `classes`: its name, or its number when the dataset has no names.
pub fn row_labels(dataset: DatasetKind, num_classes: i64, classes: &[i64]) -> Vec<String> {
    let names = class_names(dataset, num_classes);
    classes
        .iter()
        .map(|&c| match names {
            Some(n) => n[c as usize].to_string(),
            None => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_only_when_they_fit_the_model() {
        assert_eq!(
            row_labels(DatasetKind::FashionMnist, 10, &[0, 9]),
            vec!["T-shirt/top", "Ankle boot"]
        );
        assert_eq!(
            row_labels(DatasetKind::Cifar10, 1000, &[0, 100]),
            vec!["0", "100"]
        );
    }
}
