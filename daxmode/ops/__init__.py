"""Operations: desired modes from configuration files, ``apply`` at boot and hot-plug, the
udev/systemd units that run it, and sub-devices of dynamic regions."""
