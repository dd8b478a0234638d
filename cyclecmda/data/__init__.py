"""Data: image files and value scaling, class labels and masks, the unpaired dataset and its sampler,
and the generated data (the demo, the domain pairs)."""
