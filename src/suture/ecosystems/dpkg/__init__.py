"""Debian and Ubuntu images: the dpkg database, apt repositories, planning and fetching."""
