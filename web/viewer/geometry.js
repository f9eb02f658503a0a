// Voxel orders: segrefine (nibabel) indexes a volume (i, j, k) in the file's own
// order, i fastest in memory (NIfTI / Fortran order). NiiVue reorders every volume
// to its nearest RAS voxel grid (a permutation and flips of the file axes: its
// permRAS, 1-based, negative = flipped) and its drawing bitmap, fractions and
// "vox" coordinates all live in that RAS grid. This module converts between the two.

export class Geometry {
  /** @param nvImage NiiVue's background NVImage (after loading) */
  constructor(nvImage) {
    const dims = nvImage.hdr.dims;
    this.perm = Array.from(nvImage.permRAS);
    this.dimsFile = [dims[1], dims[2], dims[3]];
    this.dimsRAS = [nvImage.dimsRAS[1], nvImage.dimsRAS[2], nvImage.dimsRAS[3]];
    const [d0, d1] = this.dimsFile;
    this.fileStride = [1, d0, d0 * d1];
    const rasStride = [1, this.dimsRAS[0], this.dimsRAS[0] * this.dimsRAS[1]];
    this.rasAxisOf = [0, 0, 0]; // RAS axis p holding file axis a
    this.rasStrideOf = [0, 0, 0]; // signed RAS-bitmap stride of one step along file axis a
    this.rasOffset = 0;
    for (let p = 0; p < 3; p++) {
      const a = Math.abs(this.perm[p]) - 1;
      this.rasAxisOf[a] = p;
      if (this.perm[p] < 0) {
        this.rasStrideOf[a] = -rasStride[p];
        this.rasOffset += (this.dimsFile[a] - 1) * rasStride[p];
      } else {
        this.rasStrideOf[a] = rasStride[p];
      }
    }
  }

  /** file voxel (i, j, k) -> NiiVue RAS voxel (x, y, z) */
  fileToRas(f) {
    const r = [0, 0, 0];
    for (let p = 0; p < 3; p++) {
      const a = Math.abs(this.perm[p]) - 1;
      r[p] = this.perm[p] < 0 ? this.dimsFile[a] - 1 - f[a] : f[a];
    }
    return r;
  }

  /** NiiVue RAS voxel (x, y, z) -> file voxel (i, j, k) */
  rasToFile(r) {
    const f = [0, 0, 0];
    for (let p = 0; p < 3; p++) {
      const a = Math.abs(this.perm[p]) - 1;
      f[a] = this.perm[p] < 0 ? this.dimsFile[a] - 1 - r[p] : r[p];
    }
    return f;
  }

  /** NiiVue fraction (RAS texture coordinates, 0..1) -> file voxel, clamped inside */
  fracToFile(frac) {
    const r = [0, 1, 2].map((p) =>
      Math.min(this.dimsRAS[p] - 1, Math.max(0, Math.floor(frac[p] * this.dimsRAS[p]))));
    return this.rasToFile(r);
  }

  /** file voxel -> NiiVue fraction of the voxel's centre */
  fileToFrac(f) {
    const r = this.fileToRas(f);
    return r.map((v, p) => (v + 0.5) / this.dimsRAS[p]);
  }

  fileIndex(f) {
    return f[0] + f[1] * this.fileStride[1] + f[2] * this.fileStride[2];
  }

  rasIndexOfFile(f) {
    return this.rasOffset + f[0] * this.rasStrideOf[0] + f[1] * this.rasStrideOf[1] + f[2] * this.rasStrideOf[2];
  }

  /** the two file axes of a slice along `axis`: rows, then columns (numpy.moveaxis order) */
  sliceAxes(axis) {
    return [0, 1, 2].filter((a) => a !== axis);
  }

  inside(f) {
    return f.every((v, a) => v >= 0 && v < this.dimsFile[a]);
  }
}
