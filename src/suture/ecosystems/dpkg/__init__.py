"""ecosystems/dpkg"""
