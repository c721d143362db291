"""Image data: decoding, the decoded-image caches, the training sample stream, face detection and alignment, and
the known-degradation photo data of the demo and the benchmarks."""
