"""Everything that talks to Ray Tune lives in this package."""
