"""``push_to_hub`` with a generated model card, for hf_vtok's models and pipelines.

The card and upload are the application layer's (``hf_vtok.hub.push``); this mixin reaches it through the
library's one lazy import of that layer, so that model code never imports it.
"""

from .remote_code import RemoteCodeMixin


class HubMixin(RemoteCodeMixin):
    """``push_to_hub`` with a generated model card (and ``register_for_auto_class``) for hf_vtok classes."""

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload to the Hub with a generated model card; the options are ``hf_vtok.hub.push_to_hub``'s."""
        from .hub.push import push_to_hub  # the whitelisted lazy import of the application layer

        return push_to_hub(self, repo_id, **kwargs)


__all__ = ["HubMixin"]
