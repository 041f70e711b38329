"""rgbatch: batch compression of image archives with the Residual-GRU codec (Toderici et al. 2017)."""

__version__ = "0.1.0"
