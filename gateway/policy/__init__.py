"""The policy engine: policy files, their compilation and resolution, and the pipeline stages that apply them."""
