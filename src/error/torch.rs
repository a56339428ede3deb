//! libtorch's error text as users should see it: the one line that says what went wrong.

/// libtorch's text for an error without the C++ stack that follows it: users get the one line
/// that says what went wrong, never 25 frames of addresses.
pub fn torch_message(e: &tch::TchError) -> String {
    let text = match e {
        tch::TchError::Torch(msg) => msg.clone(),
        other => other.to_string(),
    };
    strip_cpp_backtrace(&text).to_string()
}

/// Cuts a libtorch message at its "Exception raised from ..." trailer and frame list.
pub fn strip_cpp_backtrace(text: &str) -> &str {
    // A panic's message may carry the error's Debug form, where newlines are escaped.
    let cut = [
        "\nException raised from",
        "\nframe #0:",
        "\\nException raised from",
    ]
    .iter()
    .filter_map(|marker| text.find(marker))
    .min()
    .unwrap_or(text.len());
    text[..cut].trim_end()
}

#[cfg(test)]
mod tests {
    use crate::error::Error;

    #[test]
    fn torch_errors_carry_no_cpp_frames() {
        let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let b = tch::Tensor::zeros([4, 5], (tch::Kind::Float, tch::Device::Cpu));
        let raw = a.f_matmul(&b).unwrap_err();
        assert!(
            raw.to_string().contains("frame #"),
            "libtorch changed: {raw}"
        );
        let shown = Error::from(raw).to_string();
        assert!(shown.contains("shapes cannot be multiplied"), "{shown}");
        assert!(
            !shown.contains("frame #") && !shown.contains("Exception raised"),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 1, "{shown}");
    }
}
