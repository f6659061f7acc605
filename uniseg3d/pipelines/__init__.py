"""One function per DVC stage (synth, prepare, ...) and the Ray runners."""
