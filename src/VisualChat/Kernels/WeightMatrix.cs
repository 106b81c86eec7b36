namespace VisualChat.Kernels;

/// <summary>How a weight matrix's elements are stored.</summary>
internal enum WeightFormat
{
    /// <summary>fp32, row-major.</summary>
    F32,
    /// <summary>bfloat16 (the upper half of an fp32), row-major; computed in fp32.</summary>
    BF16,
    /// <summary>Symmetric int8 in blocks of <see cref="Q8.BlockSize"/> along a row, one fp32 scale per block.</summary>
    Q8,
    /// <summary>4-bit codes in blocks of <see cref="Q4.BlockSize"/> along a row (<see cref="Q4"/>), one fp32 scale per block.</summary>
    Q4,
}

/// <summary>A row-major [rows, cols] weight matrix read in place from its owner's storage (a tensor that outlives every
/// kernel call that uses it), with an optional fp32 bias.</summary>
internal readonly unsafe struct WeightMatrix
{
    public WeightMatrix(WeightFormat format, void* data, float* scales, int rows, int cols, float* bias = null)
    {
        if (format is WeightFormat.Q8 or WeightFormat.Q4 && cols % Q8.BlockSize != 0)
            throw new ArgumentException($"A {format} weight matrix needs a multiple of {Q8.BlockSize} columns; it has {cols}.", nameof(cols));
        Format = format;
        Data = data;
        Scales = scales;
        Rows = rows;
        Cols = cols;
        Bias = bias;
    }

    public WeightFormat Format { get; }
    public void* Data { get; }
    /// <summary>Whether x is read as q8 blocks (the quantized formats' integer dot products).</summary>
    public bool IsQuantized => Format is WeightFormat.Q8 or WeightFormat.Q4;
    /// <summary>Q8, Q4: [rows, cols / 32] per-block scales; null otherwise.</summary>
    public float* Scales { get; }
    public int Rows { get; }
    public int Cols { get; }
    public float* Bias { get; }

    /// <summary>Bytes a pass over the matrix reads (weights and scales).</summary>
    public long Bytes => Format switch {
        WeightFormat.F32 => 4L * Rows * Cols,
        WeightFormat.BF16 => 2L * Rows * Cols,
        WeightFormat.Q8 => (long)Rows * Cols + 4L * Rows * (Cols / Q8.BlockSize),
        _ => (long)Rows * Cols / 2 + 4L * Rows * (Cols / Q4.BlockSize),
    };
}
