"""Experiments: runs that train, prune, quantize, kill or cycle real models and measure their quality or
behaviour (forgetting, distillation, pruning, bias under int8, weekly cycles, faults)."""
