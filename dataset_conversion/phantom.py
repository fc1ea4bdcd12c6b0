"""Synthetic abdominal CT phantom (KiTS-like): body, spine, vessels, organs, kidneys with tumors and cysts.

Shapes are drawn in millimetres in a patient frame centred on the body: +x patient left, +y posterior,
+z cranial (LPS, the frame of an identity-direction image). HU values are painted in anatomical order
onto a float canvas that is then blurred, given correlated noise and stored as int16. Each part of the
anatomy draws from its own random stream, so switching cysts off leaves the rest of a case unchanged.
"""
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from boxunet.io.images import Geometry
from dataset_conversion.phantom_shapes import (FAR, Canvas, blob, capsule, random_rotation, rotation_z,
                                               smooth_noise, tube, unit_vector)

KIDNEY, TUMOR, CYST = 1, 2, 3
MIN_SIZE_SCALE, MAX_SIZE_SCALE = 0.25, 1.5
SLICE_SPACINGS_MM = (2.5, 3.0, 3.75, 4.0, 5.0)
FLIPPED_AXES = ((False, True, False), (True, True, False), (False, False, True))  # (x, y, z)
_STREAMS = ("geometry", "body", "organs", "kidneys", "cysts", "tumors", "image")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def sample_geometry(seed: int, size_scale: float = 1.0) -> Geometry:
    """The geometry of case ``seed``: anisotropic spacing, varying size, random origin, a few flipped axes.

    ``size_scale`` scales the voxel counts at constant physical extent (the spacings grow as it shrinks).
    """
    if not MIN_SIZE_SCALE <= size_scale <= MAX_SIZE_SCALE:
        raise ValueError(f"size_scale must be in [{MIN_SIZE_SCALE}, {MAX_SIZE_SCALE}], got {size_scale}")
    rng = _streams(seed)["geometry"]
    ny = int(rng.integers(170, 211))
    nx = ny if rng.random() < 0.5 else int(rng.integers(170, 211))
    in_plane = rng.uniform(1.5, 2.2)
    slice_spacing = float(rng.choice(SLICE_SPACINGS_MM))
    full_counts = (nx, ny, round(rng.uniform(200.0, 320.0) / slice_spacing))
    counts_xyz = tuple(round(n * size_scale) for n in full_counts)
    spacing_xyz = [d * (n / m) for d, n, m in zip((in_plane, in_plane, slice_spacing), full_counts, counts_xyz)]
    flips = FLIPPED_AXES[rng.integers(len(FLIPPED_AXES))] if rng.random() < 0.15 else (False, False, False)
    origin = [rng.uniform(-250.0, -150.0), rng.uniform(-250.0, -150.0), rng.uniform(-600.0, 0.0)]
    for axis, flipped in enumerate(flips):  # a flipped axis stores the same physical volume backwards
        if flipped:
            origin[axis] += (counts_xyz[axis] - 1) * spacing_xyz[axis]
    direction = np.diag([-1.0 if flipped else 1.0 for flipped in flips]).ravel()
    return Geometry(tuple(spacing_xyz[::-1]), tuple(origin), tuple(float(d) for d in direction), counts_xyz[::-1])


@dataclass(frozen=True)
class Patient:
    """The body measures of one case in mm."""

    half_width: float
    half_depth: float
    fat: float  # subcutaneous fat thickness
    muscle: float  # abdominal wall thickness
    spine_y: float  # centre of the vertebral bodies
    vertebra_radii: tuple[float, float]
    kidney_z: float  # centre of the left kidney
    offset: tuple[float, float]  # body centre relative to the field of view centre (x, y)


@dataclass(frozen=True)
class Kidney:
    """A kidney: centre, semi-axes (long axis, towards the hilum, third axis) and its axes as matrix columns."""

    center: np.ndarray
    radii: tuple[float, float, float]
    rotation: np.ndarray

    def point(self, local) -> np.ndarray:
        """The patient-frame point at ``local`` coordinates in units of the semi-axes."""
        return self.center + self.rotation @ (np.asarray(self.radii) * np.asarray(local))


def sample_patient(rng: np.random.Generator, extent_xyz) -> Patient:
    """Body size fitted to the field of view (sometimes slightly cut at the sides, as in real scans)."""
    half_width = float(np.clip(rng.uniform(0.36, 0.48) * extent_xyz[0], 130, 190))
    half_depth = float(np.clip(half_width * rng.uniform(0.62, 0.78), 90, 0.44 * extent_xyz[1]))
    fat = rng.uniform(0.05, 0.14) * half_width
    vertebra_radii = (rng.uniform(19, 24), rng.uniform(15, 19))
    return Patient(half_width, half_depth, fat, rng.uniform(8, 14), half_depth - fat - rng.uniform(72, 85),
                   vertebra_radii, rng.uniform(-extent_xyz[2] / 2 + 85, extent_xyz[2] / 2 - 70),
                   (rng.uniform(-10, 10), rng.uniform(-20, 10)))


def paint_body(canvas: Canvas, rng: np.random.Generator, patient: Patient) -> None:
    """Skin, subcutaneous fat, abdominal wall; bowel loops with gas and mesenteric fat; retroperitoneal fat."""
    slices, (dx, dy, dz) = canvas.window((0, 0, 0), (FAR, FAR, FAR))
    theta = np.arctan2(dy / patient.half_depth, dx / patient.half_width)
    wobble = 1 + sum(rng.uniform(0, 0.025) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    exponent = np.where(dy > 0, rng.uniform(2.3, 3.0), 2.0)  # flatter back
    radius_2d = ((np.abs(dx) / patient.half_width) ** exponent
                 + (np.abs(dy) / patient.half_depth) ** exponent) ** (1 / exponent)
    z_scale = 1 + 0.04 * np.sin(2 * np.pi * dz / rng.uniform(300, 600) + rng.uniform(0, 2 * np.pi))
    radius = radius_2d / wobble / z_scale
    depth = (1 - radius) * np.sqrt(dx ** 2 + dy ** 2) / np.maximum(radius, 1e-3)
    fat = patient.fat * (1 - 0.35 * np.sin(theta))  # thicker in front than at the back
    body = radius < 1
    canvas.cavity = depth >= fat + patient.muscle
    canvas.paint(slices, body, 30.0)  # skin
    canvas.paint(slices, body & (depth >= 2.0), canvas.tissue(slices, -100, 8))
    canvas.paint(slices, depth >= fat, canvas.tissue(slices, 50, 6))
    _paint_table(canvas, rng, patient, slices, dx, dy, body)

    loops = np.abs(smooth_noise(rng, canvas.hu.shape, canvas.step[::-1], rng.uniform(6, 9)))
    gas = smooth_noise(rng, canvas.hu.shape, canvas.step[::-1], 5.0) > rng.uniform(1.0, 1.6)
    cavity = canvas.cavity
    wall, lumen = rng.uniform(0.5, 0.7), rng.uniform(0.3, 0.4)
    canvas.paint(slices, cavity & (loops >= wall), canvas.tissue(slices, -100, 10))
    canvas.paint(slices, cavity & (loops < wall), canvas.tissue(slices, rng.uniform(35, 55), 8))
    canvas.paint(slices, cavity & (loops < lumen), canvas.tissue(slices, rng.uniform(10, 35), 6))
    canvas.paint(slices, cavity & (loops < lumen) & gas, -980.0)
    retroperitoneum = dy > patient.spine_y - 45 + 0.004 * dx ** 2 + 8 * loops
    canvas.paint(slices, cavity & retroperitoneum, canvas.tissue(slices, -95, 8))


def _paint_table(canvas, rng, patient, slices, dx, dy, body) -> None:
    """A curved CT table under the patient's back (in about 70% of the cases)."""
    if rng.random() > 0.7:
        return
    top = patient.half_depth + rng.uniform(5, 25) - dx ** 2 / (2 * rng.uniform(500, 1000))
    width = np.abs(dx) < rng.uniform(180, 230)
    thickness, gap = rng.uniform(4, 8), rng.uniform(25, 40)
    canvas.paint(slices, width & (dy > top) & (dy < top + thickness) & ~body, rng.uniform(100, 300))
    canvas.paint(slices, width & (dy > top + gap) & (dy < top + gap + 3) & ~body, rng.uniform(50, 200))


def paint_organs(canvas: Canvas, rng: np.random.Generator, patient: Patient) -> None:
    """Liver (patient right, cranial) and spleen (patient left, posterior), clipped to the abdominal cavity."""
    a_x, a_y, z = patient.half_width, patient.half_depth, patient.kidney_z
    liver = blob(canvas, rng, (-rng.uniform(0.35, 0.5) * a_x, -rng.uniform(0, 0.15) * a_y, z + rng.uniform(60, 100)),
                 (rng.uniform(0.42, 0.52) * a_x, rng.uniform(0.55, 0.7) * a_y, rng.uniform(80, 105)),
                 rotation_z(rng.uniform(-0.3, 0.1)), 0.08)
    spleen = blob(canvas, rng, (rng.uniform(0.45, 0.6) * a_x, rng.uniform(0.1, 0.35) * a_y, z + rng.uniform(40, 70)),
                  (rng.uniform(20, 30), rng.uniform(35, 50), rng.uniform(40, 60)),
                  rotation_z(rng.uniform(0.3, 0.8)), 0.1)
    for organ, mean in ((liver, rng.uniform(50, 70)), (spleen, rng.uniform(45, 65))):
        if organ is not None:
            canvas.paint(organ.slices, organ.inside & canvas.cavity[organ.slices], canvas.tissue(organ.slices, mean, 8))


def sample_kidneys(rng: np.random.Generator, patient: Patient) -> list[Kidney]:
    """Two kidneys, or one in about 10% of the cases; the right one lower, hila facing anteromedially."""
    solitary = rng.random() < 0.1
    sides = [(-1, 1)[rng.integers(2)]] if solitary else [-1, 1]
    kidneys = []
    for side in sides:
        radii = (rng.uniform(48, 60), rng.uniform(24, 30), rng.uniform(17, 22))
        lateral_limit = patient.half_width - patient.fat - patient.muscle - radii[1] - 5
        center = np.array([side * min(rng.uniform(62, 75), lateral_limit), patient.spine_y + rng.uniform(-10, 8),
                           patient.kidney_z - (rng.uniform(5, 20) if side < 0 else 0.0)])
        long_axis = np.array([-side * np.tan(rng.uniform(0.1, 0.3)), np.tan(rng.uniform(0.05, 0.25)), 1.0])
        long_axis /= np.linalg.norm(long_axis)
        angle = rng.uniform(0.4, 0.8)
        hilum = np.array([-side * np.cos(angle), -np.sin(angle), 0.0])
        hilum -= (hilum @ long_axis) * long_axis
        hilum /= np.linalg.norm(hilum)
        kidneys.append(Kidney(center, radii, np.column_stack([long_axis, hilum, np.cross(long_axis, hilum)])))
    return kidneys


def paint_retroperitoneum(canvas: Canvas, rng: np.random.Generator, patient: Patient, kidneys: list[Kidney]) -> None:
    """Perirenal fat, back and psoas muscles, renal vessels, aorta, inferior vena cava and the spine."""
    for kidney in kidneys:
        fat = blob(canvas, rng, kidney.center, np.asarray(kidney.radii) + rng.uniform(8, 15, 3), kidney.rotation, 0.1)
        if fat is not None:
            canvas.paint(fat.slices, fat.inside & canvas.cavity[fat.slices], canvas.tissue(fat.slices, -95, 8))
    ys, (rx, ry) = patient.spine_y, patient.vertebra_radii
    for side in (-1, 1):
        slices, mask = tube(canvas, (side * rng.uniform(28, 36), ys + rng.uniform(48, 56), 0),
                            (rng.uniform(22, 28), rng.uniform(15, 20)))
        if slices is not None:
            canvas.paint(slices, mask & canvas.cavity[slices], canvas.tissue(slices, 50, 6))
        slices, mask = tube(canvas, (side * (rx + rng.uniform(10, 15)), ys + rng.uniform(-5, 5), patient.kidney_z),
                            (rng.uniform(12, 17), rng.uniform(10, 14)), slope=(-side * rng.uniform(0.05, 0.15), 0.0),
                            taper=rng.uniform(0.004, 0.008))
        if slices is not None:
            canvas.paint(slices, mask, canvas.tissue(slices, 50, 6))

    aorta_radius = rng.uniform(9, 13)
    aorta = np.array([rng.uniform(8, 16), ys - ry - aorta_radius - rng.uniform(2, 6), 0.0])
    cava = np.array([-rng.uniform(18, 28), ys - ry - rng.uniform(8, 14), 0.0])
    aorta_hu, cava_hu = rng.uniform(150, 250), rng.uniform(90, 140)
    aorta_slope, cava_slope = rng.uniform(-0.03, 0.03, 2), rng.uniform(-0.03, 0.03, 2)
    for kidney in kidneys:
        hilum = kidney.point((0, 0.6, 0))
        for source, slope, radius, value in ((aorta, aorta_slope, rng.uniform(2.5, 3.5), aorta_hu),
                                             (cava, cava_slope, rng.uniform(4, 6), cava_hu)):
            start = (source[0] + slope[0] * hilum[2], source[1] + slope[1] * hilum[2], hilum[2])
            slices, mask = capsule(canvas, start, hilum, radius)
            if slices is not None:
                canvas.paint(slices, mask, value)
    for center, slope, radii, value in ((cava, cava_slope, (rng.uniform(11, 15), rng.uniform(7, 10)), cava_hu),
                                        (aorta, aorta_slope, (aorta_radius, aorta_radius), aorta_hu)):
        slices, mask = tube(canvas, center, radii, slope=tuple(slope))
        if slices is not None:
            canvas.paint(slices, mask, canvas.tissue(slices, value, 5))
            canvas.protected[slices] |= np.broadcast_to(mask, canvas.protected[slices].shape)
    paint_spine(canvas, rng, patient)


def paint_spine(canvas: Canvas, rng: np.random.Generator, patient: Patient) -> None:
    """Vertebrae (cancellous body with cortical rim and endplates), discs, canal, arches and processes."""
    (rx, ry), period = patient.vertebra_radii, rng.uniform(28, 34)
    disc, phase, curve = rng.uniform(6, 9), rng.uniform(0, period), rng.uniform(-8, 8)
    cancellous, cortical = rng.uniform(200, 380), rng.uniform(650, 1000)
    canal_radius = rng.uniform(7, 9)
    canal_y = ry + canal_radius + 3
    window = canvas.window((0, patient.spine_y, 0), (60, 110, FAR))
    if window is None:
        return
    slices, (dx, dy, dz) = window
    dy = dy - curve * (2 * dz / canvas.extent[2]) ** 2
    level = np.mod(dz - phase, period)
    body_radius = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    vertebral_body = body_radius < 1
    endplate = (level < disc + 1.5) | (level > period - 1.5)
    canal = dx ** 2 + (dy - canal_y) ** 2 < canal_radius ** 2
    arch_level = np.mod(level - disc, period) > 4  # facet joint gap below each disc
    arch = arch_level & (dx ** 2 + (dy - canal_y) ** 2 < (canal_radius + 5) ** 2) & (dy > ry - 4)
    behind_canal = dy - canal_y - canal_radius
    spinous = arch_level & (np.abs(dx) < 5 - behind_canal / 10) & (behind_canal > -3) & (behind_canal < 28)
    transverse = (arch_level & (level > period * 0.35) & (np.abs(dx) < 34)
                  & (np.abs(dy - canal_y + 4 + 0.15 * np.abs(dx)) < 4.5))
    posterior = (arch | spinous | transverse) & ~canal
    canvas.paint(slices, vertebral_body, canvas.tissue(slices, cancellous, 25))
    canvas.paint(slices, vertebral_body & ((body_radius > 1 - 2.5 / ry) | endplate), cortical)
    canvas.paint(slices, vertebral_body & (level < disc), canvas.tissue(slices, 80, 6))
    canvas.paint(slices, posterior, 0.7 * cortical)
    canvas.paint(slices, canal, canvas.tissue(slices, 15, 4))
    canvas.protected[slices] |= vertebral_body | posterior | canal


def paint_kidney(canvas: Canvas, rng: np.random.Generator, kidney: Kidney) -> None:
    """Cortex, medullary pyramids, renal sinus fat and pelvis; label 1 inside the kidney contour (the hilum
    notch excluded)."""
    cortex, medulla = rng.uniform(160, 200), rng.uniform(80, 120)
    sinus_fat, urine = rng.uniform(-100, -60), rng.uniform(0, 20)
    thickness, pyramids, rows = rng.uniform(5, 8), rng.integers(5, 8), rng.uniform(2.5, 3.5)
    phases = rng.uniform(0, 2 * np.pi, 2)
    shape = blob(canvas, rng, kidney.center, kidney.radii, kidney.rotation, 0.04)
    if shape is None:
        return
    slices, (u0, u1, u2) = shape.slices, shape.u
    notch = ((u1 - 0.95) / 0.45) ** 2 + (u0 / 0.35) ** 2 + (u2 / 0.55) ** 2 < 1
    sinus = (u0 / 0.6) ** 2 + ((u1 - 0.45) / 0.55) ** 2 + (u2 / 0.42) ** 2 < 1
    pelvis = (u0 / 0.3) ** 2 + ((u1 - 0.55) / 0.3) ** 2 + (u2 / 0.22) ** 2 < 1
    pattern = np.cos(pyramids * np.arctan2(u2, u1) + phases[0]) * np.cos(np.pi * rows * u0 + phases[1])
    in_medulla = (shape.depth_mm() > thickness) & (pattern > -0.2)
    value = canvas.tissue(slices, cortex, 8)
    value = np.where(in_medulla, canvas.tissue(slices, medulla, 6), value)
    value = np.where(sinus, canvas.tissue(slices, sinus_fat, 10), value)
    value = np.where(pelvis, canvas.tissue(slices, urine, 4), value)
    canvas.paint(slices, shape.inside & ~notch & ~canvas.protected[slices], value, KIDNEY)


def sample_cysts(rng: np.random.Generator, kidneys: list[Kidney]) -> list[tuple[np.ndarray, float, float]]:
    """(centre, radius, HU) of the simple cysts: none in about 70% of the cases, else one or two."""
    if rng.random() > 0.3:
        return []
    cysts = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        kidney = kidneys[rng.integers(len(kidneys))]
        center = kidney.point(unit_vector(rng) * rng.uniform(0.4, 1.0))
        cysts.append((center, rng.uniform(4, 15), rng.uniform(0, 20)))
    return cysts


def paint_cyst(canvas: Canvas, rng: np.random.Generator, center, radius: float, value: float) -> None:
    """A round, homogeneous cyst (label 3)."""
    shape = blob(canvas, rng, center, radius * rng.uniform(0.9, 1.1, 3), random_rotation(rng), 0.03)
    if shape is not None:
        mask = shape.inside & canvas.cavity[shape.slices] & ~canvas.protected[shape.slices]
        canvas.paint(shape.slices, mask, canvas.tissue(shape.slices, value, 3), CYST)


def paint_tumor(canvas: Canvas, rng: np.random.Generator, kidney: Kidney) -> None:
    """An irregular tumor (label 2) of 1-7 cm growing from ``kidney``, exophytic when its centre lies near or
    beyond the kidney surface: a perturbed ellipsoid plus up to two lobes, heterogeneous, sometimes necrotic."""
    radius = rng.uniform(np.sqrt(5.0), np.sqrt(35.0)) ** 2  # diameter 1-7 cm, median about 3.3 cm
    direction = unit_vector(rng)
    while direction[1] > 0.3:  # not into the hilum
        direction = unit_vector(rng)
    center = kidney.point(direction * rng.uniform(0.55, 1.15))
    base, heterogeneity = rng.uniform(30, 110), rng.uniform(8, 20)
    necrosis = rng.uniform(0.35, 0.6) if radius > 15 and rng.random() < 0.5 else 0.0
    main = blob(canvas, rng, center, radius * rng.uniform(0.8, 1.2, 3), random_rotation(rng), rng.uniform(0.08, 0.18))
    parts = [(main, base)]
    for _ in range(rng.integers(0, 3)):
        lobe_center = center + unit_vector(rng) * radius * rng.uniform(0.4, 0.7)
        lobe = blob(canvas, rng, lobe_center, radius * rng.uniform(0.4, 0.7, 3), random_rotation(rng), 0.12)
        parts.append((lobe, base + rng.uniform(-15, 15)))
    necrotic_value = rng.uniform(5, 25)
    for index, (shape, mean) in enumerate(parts):
        if shape is None:
            continue
        value = canvas.tissue(shape.slices, mean, heterogeneity)
        if index == 0 and necrosis:
            value = np.where(shape.radius < necrosis, canvas.tissue(shape.slices, necrotic_value, 4), value)
        mask = shape.inside & canvas.cavity[shape.slices] & ~canvas.protected[shape.slices]
        canvas.paint(shape.slices, mask, value, TUMOR)
    centre_voxel = canvas.index_of(center)  # even a tiny tumor on a coarse grid keeps one voxel
    canvas.label[centre_voxel], canvas.hu[centre_voxel] = TUMOR, base


def finish_image(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Mild blur, slightly correlated Gaussian noise (sigma 10-25 HU), rounding to int16 HU."""
    in_plane_blur = rng.uniform(0.5, 0.8)
    hu = ndimage.gaussian_filter(canvas.hu, (rng.uniform(0.3, 0.5), in_plane_blur, in_plane_blur))
    correlation, sigma = rng.uniform(0.5, 0.9), rng.uniform(10, 25)
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), (0.0, correlation, correlation))
    hu += noise * (sigma / noise.std())
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def generate_case(seed: int, size_scale: float = 1.0, cysts: bool = True) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """One phantom case: an int16 HU image and a uint8 label map (0 background, 1 kidney, 2 tumor, 3 cyst),
    both (z, y, x), with their geometry. The same ``seed`` and ``size_scale`` give the same case."""
    geometry = sample_geometry(seed, size_scale)
    streams = _streams(seed)
    extent_xyz = [n * d for n, d in zip(geometry.shape[::-1], geometry.spacing[::-1])]
    patient = sample_patient(streams["body"], extent_xyz)
    texture = smooth_noise(streams["body"], geometry.shape, geometry.spacing, 2.5)
    canvas = Canvas(geometry.spacing, patient.offset, texture)
    paint_body(canvas, streams["body"], patient)
    paint_organs(canvas, streams["organs"], patient)
    kidneys = sample_kidneys(streams["kidneys"], patient)
    paint_retroperitoneum(canvas, streams["kidneys"], patient, kidneys)
    for kidney in kidneys:
        paint_kidney(canvas, streams["kidneys"], kidney)
    sampled_cysts = sample_cysts(streams["cysts"], kidneys)
    for center, radius, value in sampled_cysts if cysts else []:
        paint_cyst(canvas, streams["cysts"], center, radius, value)
    for _ in range(streams["tumors"].choice([1, 2, 3], p=[0.65, 0.25, 0.1])):
        paint_tumor(canvas, streams["tumors"], kidneys[streams["tumors"].integers(len(kidneys))])
    image, label = finish_image(canvas, streams["image"]), canvas.label
    for axis, sign in enumerate(np.asarray(geometry.direction).reshape(3, 3).diagonal()):
        if sign < 0:  # stored backwards along this axis, same physical anatomy
            image, label = np.flip(image, 2 - axis), np.flip(label, 2 - axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(label), geometry
