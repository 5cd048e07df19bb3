"""Camera, microphone, speaker, file and synthetic sources; device listing."""
