"""RDKit as a symbolic tool: SMILES diagnosed atom by atom, similarity metrics, pictures."""
