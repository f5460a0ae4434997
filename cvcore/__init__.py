"""cvcore: the library behind the car-part perspective service (data, renderer, model, metrics, reports).

It imports nothing from Ray, so every piece can be used and tested on its own.
"""
