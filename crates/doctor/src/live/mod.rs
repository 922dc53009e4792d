//! Live probes of a URL, layer by layer, ending in a verdict.
