"""Cheap per-epoch statistics of a binary network, recorded in ``metrics.jsonl``.

* ``flip_ratio[name]`` -- the fraction of binary weights whose sign changed during the
  epoch (sign at the end vs sign at the start);
* ``ste_cancel[layer]`` -- the fraction of a sign activation's inputs with |x| > 1, i.e.
  whose gradient the hard-tanh straight-through estimator cancels, averaged over the
  epoch's mini-batches;
* ``latent_hist[name]`` -- counts of the latent weights in ``HIST_BINS`` equal bins over
  [-1, 1] at the end of the epoch (how they pile up at +-1).

:class:`EpochStats` works on a model with NumPy arrays.  :class:`DeviceEpochStats` is its
twin for device-resident training (:class:`minibnn.device.DeviceLoop`): the STE-cancel
counts are taken by a kernel on the device activations and summed there (float64, the
host's operations in its order, so the two give the same numbers for the same
activations), copied back when the epoch's row or a checkpoint needs them; the flip
ratio and the histograms are read from the host copy of the model that the loop makes
at the end of every epoch for ``best.npz`` / ``last.npz`` anyway (the signs at an
epoch's start are those of the previous epoch's end copy), so they cost no extra copy.
"""

import numpy as np

HIST_BINS = 20


def _binary_params(model):
    return [(name, p) for name, p, _g, info in model.parameters() if info.get("binary")]


def _sign_layers(model):
    return [(i, layer) for i, layer in enumerate(getattr(model, "layers", []))
            if type(layer).__name__ == "SignActivation"]


def ste_cancel_fraction(layer):
    """Fraction of the last forward input of a SignActivation with |x| > 1 (None if unknown)."""
    x = getattr(layer, "last_input", None)
    if x is None:
        return None
    return float(np.mean(np.abs(x) > 1))


class EpochStats:
    def __init__(self, model):
        self.start_signs = {name: p >= 0 for name, p in _binary_params(model)}
        self.cancel_sum = {}
        self.batches = 0

    def after_batch(self, model):
        self.batches += 1
        for i, layer in _sign_layers(model):
            frac = ste_cancel_fraction(layer)
            if frac is not None:
                self.cancel_sum[str(i)] = self.cancel_sum.get(str(i), 0.0) + frac

    def summary(self, model):
        flips, hists = {}, {}
        for name, p in _binary_params(model):
            if name in self.start_signs:
                flips[name] = float(np.mean((p >= 0) != self.start_signs[name]))
            hists[name] = np.histogram(p, bins=HIST_BINS, range=(-1.0, 1.0))[0].tolist()
        out = dict(flip_ratio=flips, latent_hist=hists)
        if self.batches and self.cancel_sum:
            out["ste_cancel"] = {k: v / self.batches for k, v in self.cancel_sum.items()}
        return out

    # -- a checkpoint of a partly done epoch (resume gives the same row) ------
    def state_dict(self):
        """``(arrays, scalars)``: ``arrays`` name -> bool array (the signs at the epoch's
        start, ``"start_signs/<param>"``), ``scalars`` a JSON-able dict (``batches``,
        ``cancel_sum``; floats round-trip exactly through JSON)."""
        arrays = {f"start_signs/{k}": v.copy() for k, v in self.start_signs.items()}
        return arrays, {"batches": int(self.batches), "cancel_sum": dict(self.cancel_sum)}

    def load_state_dict(self, arrays, scalars):
        """Restore from :meth:`state_dict` output; ``ValueError`` if a sign array's shape
        differs from the one this tracker holds (built for the same model)."""
        signs = {k[len("start_signs/"):]: np.asarray(v, dtype=bool)
                 for k, v in arrays.items() if k.startswith("start_signs/")}
        for k, v in signs.items():
            if k not in self.start_signs or self.start_signs[k].shape != v.shape:
                raise ValueError(f"epoch statistics: start signs {k!r} do not match the model")
        missing = sorted(set(self.start_signs) - set(signs))
        if missing:
            raise ValueError(f"epoch statistics: no start signs for {missing}")
        self.start_signs = signs
        self.batches = int(scalars["batches"])
        self.cancel_sum = {str(k): float(v) for k, v in scalars["cancel_sum"].items()}


class DeviceEpochStats(EpochStats):
    """:class:`EpochStats` of a model whose arrays live on the device.

    ``host_model``: the host copy of the model, current at construction (the start signs)
    and when :meth:`summary` is called (the loop refreshes it at the end of the epoch);
    ``after_batch(model)`` takes the device model.  Same results, same checkpoint form.
    """

    def __init__(self, host_model):
        from .kernels import cuda_float as kf

        super().__init__(host_model)
        self._kf = kf
        self._slots = {str(i): j for j, (i, _layer) in enumerate(_sign_layers(host_model))}
        n = max(1, len(self._slots))
        self._counts = kf.cuda.to_device(np.zeros(n, dtype=np.int32))
        self._acc = kf.cuda.to_device(np.zeros(n, dtype=np.float64))
        self._seen = set()

    def after_batch(self, model):
        kf = self._kf
        self.batches += 1
        for i, layer in _sign_layers(model):
            x = getattr(layer, "last_input", None)
            if x is None or x.size == 0:
                continue
            slot = self._slots[str(i)]
            kf.launch_elem(kf.abs_gt1_count_kernel, x.size, kf.flat(x), self._counts, slot)
            kf.add_fraction_kernel[1, 1](self._counts, self._acc, slot, x.size)
            self._seen.add(str(i))

    def _pull(self):
        """Copy the device sums into ``cancel_sum`` (one sync)."""
        if self._seen:
            acc = self._acc.copy_to_host()
            self.cancel_sum = {k: float(acc[self._slots[k]]) for k in sorted(self._seen, key=int)}

    def summary(self, host_model):
        self._pull()
        return super().summary(host_model)

    def state_dict(self):
        self._pull()
        return super().state_dict()

    def load_state_dict(self, arrays, scalars):
        for k in scalars["cancel_sum"]:
            if str(k) not in self._slots:
                raise ValueError(f"epoch statistics: STE-cancel sum for layer {k!r}, which "
                                 "is not a sign activation of the model")
        super().load_state_dict(arrays, scalars)
        acc = np.zeros(self._acc.shape[0], dtype=np.float64)
        for k, v in self.cancel_sum.items():
            acc[self._slots[k]] = v
        self._acc.copy_to_device(acc)
        self._seen = set(self.cancel_sum)
