"""How a reward steers video sampling: reward protocol, latent decoders, reranking and gradient guidance."""
