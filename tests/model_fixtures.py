"""Shared helpers for model tests."""

import torch


def randomize_batchnorm(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, as after training (in place; returns the model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                module.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                module.weight.copy_(torch.randn(c, generator=g))
                module.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model
