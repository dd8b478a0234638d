"""Export: writing a checkpoint's generators as self-contained artifacts, and translating folders with them."""
