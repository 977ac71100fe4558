"""`stillroom demo`: a narrated run of the whole loop on generated downloads."""
