"""Fixed feature networks (perceptual losses, metric backbones): nothing trains, nothing leaves eval mode."""

from torch import nn


class FrozenNetwork(nn.Module):
    """Base of the fixed networks: ``freeze()`` turns gradients off and puts the module in eval mode, and
    ``train()`` keeps it there (dropout and batch-norm statistics are part of the loss or metric). Gradients
    still flow to the inputs, so the same module serves as a training loss."""

    def freeze(self):
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True):
        return super().train(False)
