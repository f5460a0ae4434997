"""A held-out scene generator for the transfer benchmark (bench/bench_transfer.py).

It renders car photos in the customer's format with the README's labels, but shares no code and no
modelling choice with the training renderer (cvcore.synth), so that a model trained on our renders
is measured on a source it has never seen. It lives under bench/ on purpose: never import it from
cvcore/ or ray_jobs/, never pretrain or fine-tune on it, never choose defaults by looking at it.

- geometry.py: lofted superellipse car bodies (parts assigned per triangle), lathed wheels, boxes, blobs;
- raster.py: pinhole camera and a vectorised z-buffered triangle rasteriser;
- shading.py: per-pixel Blinn-Phong, Fresnel sky reflections, procedural paint details and textures;
- render.py: a scene drawn, photographed (exposure, vignetting, noise, blur) and labelled;
- scene.py: random cars, photographer, surroundings and light, and constructed scenes for tests;
- dataset.py and __main__.py: `python -m bench.heldout --out DIR` writes imgs/ + car_imgs_4000.csv.
"""
