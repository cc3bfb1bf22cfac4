"""CPU (plain torch) paths of the ops in ``geodepth.ops``."""
