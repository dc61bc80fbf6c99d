"""Assets a job reads: ADE20K checks, the synthetic dataset, pretrained weights and the
checkpoint converters."""
