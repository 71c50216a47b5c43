"""ecosystems"""
