"""One sub-package per tokenizer family."""
