"""Neural models: instrument decoders (GRU + DDSP synth) and the arranger (Transformer)."""
