"""A rule pack (mappings/*.yaml): its schema, and its compiled form that billing and rules read.

The pack is configuration for every later step, so this package imports none of them: the
names a pack may use (facts, collections, text sources) come from the modules below it.
"""

from fhir_adapter.pack.load import Pack, cached_pack, default_pack_path, load_pack, pack_from_text

__all__ = ["Pack", "cached_pack", "default_pack_path", "load_pack", "pack_from_text"]
