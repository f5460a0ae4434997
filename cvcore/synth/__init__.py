"""Procedural car renderer: the embedded default data set, with labels that are exact by construction.

Why: the real challenge data (photos + hand-made perspective scores) cannot ship with the project,
yet every stage needs a data set in the customer's format to run end to end. Rendering cars
ourselves also gives labels with a precise definition, part masks, and as many images as wanted.

Scene (renderer version 2, domain randomisation: everything the labels do not depend on varies, so
that a model learns cars rather than this renderer). A low-poly car of one of eight body styles
(city car, hatchback, sedan, estate, coupe, SUV, pickup, van; ``bodies.BODY_STYLES``), angular or
rounded, with random part looks (``parts``: light shapes, sizes and colours, grille, plates or none,
mirrors, handles, window frames, rims, roof rails, stickers) and paint (gloss, two-tone roof, dirt).
What tells front from rear and left from right stays tied to the geometry: white headlights and a
grille in front, red taillights behind, the windshield's rake and position, mirrors ahead of the
front doors. Around it: other cars (parked beside, in a row, anywhere, or between the camera and the
car), people, boxes, poles, bushes, trees, walls and buildings, on asphalt, concrete, grass, gravel,
sand or cobbles, sometimes with parking bays, under a sky with a tree or building line. Light
(``looks.LIGHTING``): sun at any azimuth with cast shadows, overcast, dusk or artificial light.
Camera: any azimuth, elevation 0.5-75 degrees (mostly low), field of view 28-80 degrees, framing
from a car a tenth of the frame wide to close-ups that cut it at the border, off-centre, rolled;
then exposure, white balance, defocus or shake, sensor noise, and a random JPEG quality when
written. A z-buffered rasteriser in numpy draws flat-shaded polygons (Lambert, a specular highlight
and a mirrored sky or ground on paint and glass). Lens distortion is not modelled: it would move
pixels away from the pinhole projection that the label areas are computed on.

Scene distributions (``DISTRIBUTIONS``, a ``SceneDistribution`` each) set what a photo source
changes. "default", described above, is the embedded data set, tuned to the real data's label
statistics. "shifted" is another source for fine-tuning on data never seen in pretraining: wide-angle
phone lenses (60-90 degrees field of view), higher viewpoints (elevation 5-65, mean about 29
degrees), more close-ups and crops, more SUVs, more saturated paints, mostly overcast and darker
light, more blur and JPEG compression (quality 25-59), and more clutter; it draws from its own
random stream.

Coordinates: car coordinates are the world: x forward, y to the car's left, z up, origin on the
ground under the car's centre. Azimuth is measured from the front towards the left (0 = camera in
front of the car, 90 = on its left), elevation above the horizontal, both seen from the centre of
the car's bounding box (``camera_azimuth``, ``camera_elevation``, ``camera_distance``).

Labels, for every part P (``PARTS``):

    score(P) = visible_fraction(P) * facing(P), rounded to 4 decimals; below 0.02 it becomes 0.

- ``visible_fraction(P)``: pixels of P in the final image (after occlusion by anything, including
  the car itself, and after cropping by the image border), divided by the projected area of P's
  camera-facing faces on the unbounded image plane, computed analytically from polygon areas;
  clipped to [0, 1]. Details that only decorate a part (door handles, rims, window glass, mirrors,
  wheel wells, plates, grilles, stickers, roof rails) do not add to its area; lights cut their area
  out of the panel they sit on. Only the main car is labelled: other cars, people and objects are
  part id 0 and count only by hiding it.
- ``facing(P)``: max(0, cos of the angle between the unit vector from P's centre (area-weighted
  centroid of its faces) to the camera and P's canonical viewing direction below).

Canonical viewing directions, as (azimuth, elevation) in degrees; ``_right`` parts mirror their
``_left`` twin (negated azimuth, i.e. negated y). They are the directions a photographer would
choose to show the part best:

    hood (0, 35)                 windshield (0, 30)          roof (0, 90): straight from above
    rear_window (180, 30)        trunk (180, 35)             front (0, 10)      rear (180, 10)
    frontdoor_left (90, 10)      backdoor_left (90, 10)      wheel_*_left (90, 5)
    front_fender_left (60, 10)   rear_fender_left (120, 10)  three-quarter views
    headlight_left (25, 10)      taillight_left (155, 10)    the corner the light wraps around

Entry points: ``render_example`` (one random example from (seed, index), for streaming),
``render_scene`` (an explicit car, camera, clutter, other cars and look), ``write_dataset`` (the customer's
layout, in parallel, deterministic) and ``label_stats`` / ``format_label_stats``.

Modules: ``scene`` (what a scene is), ``geometry`` (polygon meshes), ``bodies`` (body styles),
``parts`` (part looks), ``clutter`` (objects and other cars around the car), ``camera`` (random
framing), ``looks`` (light, ground, photographic effects), ``raster`` and ``background`` (drawing),
``labels`` (the label definition in code), ``distributions`` (scene knobs), ``render`` (scene ->
example) and ``dataset`` (the customer's layout; ``dataset_is_current`` tells a data set rendered by
an older ``RENDERER_VERSION``).
"""

from cvcore.labels import CHALLENGE_PARTS, CHALLENGE_TARGETS, PART_IDS, PARTS
from cvcore.synth.bodies import STYLES, car_mesh, random_car
from cvcore.synth.camera import blur_scale, random_camera
from cvcore.synth.clutter import clutter_mesh, random_clutter
from cvcore.synth.dataset import (
    MANIFEST_NAME,
    MASK_DIR,
    RENDERER_VERSION,
    dataset_is_current,
    dataset_manifest,
    image_name,
    write_dataset,
)
from cvcore.synth.distributions import DISTRIBUTIONS, IMAGE_SIZES, SceneDistribution, scene_distribution
from cvcore.synth.labels import CANONICAL_DIRECTIONS, MIN_SCORE, extended_columns, format_label_stats, label_stats
from cvcore.synth.looks import random_look
from cvcore.synth.render import random_scene, render_example, render_scene
from cvcore.synth.scene import Camera, CarShape, Clutter, Example, Look, ParkedCar, PartLook, Scene, Sticker, direction

__all__ = [
    "CANONICAL_DIRECTIONS", "CHALLENGE_PARTS", "CHALLENGE_TARGETS", "DISTRIBUTIONS", "IMAGE_SIZES", "MANIFEST_NAME",
    "MASK_DIR", "MIN_SCORE", "PARTS", "PART_IDS", "RENDERER_VERSION", "STYLES", "Camera", "CarShape", "Clutter",
    "Example", "Look", "ParkedCar", "PartLook", "Scene", "Sticker", "SceneDistribution", "blur_scale", "car_mesh", "clutter_mesh", "dataset_is_current", "dataset_manifest", "direction",
    "extended_columns", "format_label_stats", "image_name", "label_stats", "random_camera", "random_car",
    "random_clutter", "random_look", "random_scene", "render_example", "render_scene", "scene_distribution",
    "write_dataset",
]  # fmt: skip
