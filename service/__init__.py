"""Serving and acting: the path that answers (the student worker, encoders, students, judging),
the HTTP gateway and automation hooks. Imports neither `trainers` nor `daemon`."""
