"""Features: the full view and a pool of crops of every image through the image encoder, kept in
a safetensors shard cache that is safe to interrupt, resume and share.

- :mod:`wca.features.embeddings`: :class:`Features`, the embeddings of one pass.
- :mod:`wca.features.key`: the cache key.
- :mod:`wca.features.identity`: each image identified by its content, checked through its stat.
- :mod:`wca.features.manifest`: the manifest, shard records and headers, as schemas.
- :mod:`wca.features.cache`: the shards, their verification and how processes share them.
- :mod:`wca.features.claims`: processes that fill one cache at once share its shards.
- :mod:`wca.features.views`: decoding and view making, in a thread or loader workers.
- :mod:`wca.features.extract`: the encoding loop, :func:`extract_features`.
- :mod:`wca.features.rounds`: crops read in rounds until the stopping head
  (:mod:`wca.features.judge`) settles an image; :mod:`wca.features.adaptive`: the adaptive
  pass and its prefix store.
- :mod:`wca.features.distributed`: the same split over the ranks that torchrun starts.
"""

from wca.features.cache import MANIFEST, Features, ShardCache, cache_key
from wca.features.extract import DEFAULT_BATCH_SIZE, extract_features

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MANIFEST",
    "Features",
    "ShardCache",
    "cache_key",
    "extract_features",
]
