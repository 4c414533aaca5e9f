"""Split the k means of each instance into contexts of ``context_size`` means (§3)."""

from hyperkern._shared import context_count, from_contexts, to_contexts

__all__ = ["context_count", "from_contexts", "to_contexts"]
