"""TwiG generation: the shared sequence format, the batched think-while-generating sampler, outputs."""
