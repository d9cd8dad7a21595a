"""One module per scorer: BLIP-VQA, CLIP, detection (OWLv2 + official geometry rules), depth, VQA judges."""
