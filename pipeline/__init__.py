"""The twig-forge dataset pipeline: sources, stages, the unit runner and the engines that schedule it."""

__version__ = "0.1.0"
