"""Expansion of recurrent layers read as bipartite graphs: `graphs` (layer -> named biadjacency matrices in a gate
view), `spectral` (singular values, spectral gap, Ramanujan bound, Delta_R / Delta_S, Laplacian and Cheeger bounds)
and `analysis` (every graph of a model, tabulated). numpy and scipy only: no TensorFlow.
"""
