"""Non-learned algorithms on arrays: nearest neighbours, spectral clustering, AC-PIC, refills."""
