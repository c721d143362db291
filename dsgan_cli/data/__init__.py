"""Image data: decoding, the decoded-image caches, the training sample stream, face detection and alignment."""
