"""Constants about files shared by the data loaders and the concept builders."""

#: Suffixes of the image files that invert reads (case-insensitive): the same set labels
#: samples (:func:`invert.concepts.from_folders`) and loads them
#: (:func:`invert.extract.load_image_folder`), so the two always agree.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
)
