"""A seeded synthetic world of road scenes with exact answers (numpy and OpenCV, no torch).

It is what the small scene LLaVA is trained and measured on (models/scene_*.py,
bench/accuracy.py), and what the `synthetic` camera source shows, so a streamed
answer can be checked against the scene behind its frame.

- world.py: objects, backdrop, scene; draw.py: pixels, masks, geometry;
- questions.py: the five question kinds, exact answers, parsing;
- sampling.py: balanced random examples; moving.py: moving scenes and their camera.
"""
