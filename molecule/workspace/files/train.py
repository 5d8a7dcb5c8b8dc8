"""The seed articles' smoke test: a small Keras model trained on random data, run with nohup."""
import numpy as np
import tensorflow as tf

print("tensorflow", tf.__version__, flush=True)
x = np.random.rand(1000, 20).astype("float32")
y = np.random.rand(1000, 1).astype("float32")
model = tf.keras.Sequential([
    tf.keras.layers.Dense(64, activation="relu", input_shape=(20,)),
    tf.keras.layers.Dense(64, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer="adam", loss="mse")
history = model.fit(x, y, epochs=5, batch_size=32, verbose=2)
model.save("model.h5")
print("epochs", len(history.history["loss"]), "final loss", round(history.history["loss"][-1], 4))
print("done", flush=True)
