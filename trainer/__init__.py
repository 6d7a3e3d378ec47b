"""TwiG training: SFT and TwiG-GRPO on the pipeline's data, rewards and T2I-CompBench evaluation."""
