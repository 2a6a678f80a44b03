"""Engines that run a job on someone else's runtime (Flower); the in-process engine is ``secure_fedrec.engine``."""
