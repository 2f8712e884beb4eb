"""Samples -> FeatureSet: pretrained backbones (local weights only), batched streaming embedding of
one shard of a file list, and a feature cache. Imports no method: methods and workflows call it."""
