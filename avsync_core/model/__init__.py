"""The AVSyncD model: the four additions, the trained motion module and its files, the official layout, the UNet.

``additions`` holds the layers the paper adds to SD1.5, ``motion_module`` the trained part under official names,
``motion_files`` reads and writes it, ``official`` and ``unet_layout`` map official checkpoints onto the layouts of
diffusers and ComfyUI, ``unet`` is the standalone (diffusers) model, and ``operations`` lets a host stream the layers.
"""
