using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Training.Distributed;

/// <summary>
/// MPI_COMM_WORLD of an Open MPI job: rank, size and the collectives data-parallel training uses. Tensor arguments
/// must be contiguous CPU tensors that own their storage from offset 0 (the flat buffers the trainer allocates); MPI
/// reads and writes their storage in place through <see cref="torch.Tensor.bytes"/>, with no per-element copy.
/// One instance per process: it calls MPI_Init_thread when created and MPI_Finalize when disposed.
/// </summary>
public sealed unsafe class MpiCommunicator : IDisposable
{
    static MpiCommunicator? _instance;
    bool _finalized;

    public int Rank { get; }
    public int Size { get; }
    /// <summary>Ranks on this machine (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE), to share its cores between them.</summary>
    public int LocalSize { get; }
    public bool IsRoot => Rank == 0;

    MpiCommunicator(int rank, int size, int localSize) => (Rank, Size, LocalSize) = (rank, size, localSize);

    /// <summary>Initialises MPI (once per process) and returns the world communicator.</summary>
    public static MpiCommunicator Initialize()
    {
        if (_instance is not null) return _instance;
        MpiNative.Load();
        int initialized;
        MpiNative.Check(MpiNative.Initialized(&initialized), "MPI_Initialized");
        if (initialized == 0)
        {
            int provided;
            MpiNative.Check(MpiNative.InitThread(null, null, MpiNative.ThreadSerialized, &provided), "MPI_Init_thread");
            if (provided < MpiNative.ThreadSerialized)
                throw new InvalidOperationException($"Open MPI provides thread level {provided}; training needs MPI_THREAD_SERIALIZED ({MpiNative.ThreadSerialized}).");
        }
        int rank, size;
        MpiNative.Check(MpiNative.CommRank(MpiNative.CommWorld, &rank), "MPI_Comm_rank");
        MpiNative.Check(MpiNative.CommSize(MpiNative.CommWorld, &size), "MPI_Comm_size");
        int localSize = int.TryParse(Environment.GetEnvironmentVariable(MpiLaunch.LocalSizeVariable), out var local) && local > 0 ? local : size;
        return _instance = new MpiCommunicator(rank, size, localSize);
    }

    /// <summary>Limits libtorch's intra-op threads to this rank's share of the machine's cores (ranks on one machine
    /// would otherwise each start a thread per core and oversubscribe it); VISUALCHAT_THREADS still decides when set.
    /// Returns the thread count in effect.</summary>
    public int ShareCores()
    {
        if (Environment.GetEnvironmentVariable(VisualChat.Model.DevicePolicy.ThreadsVariable) is null)
            torch.set_num_threads(Math.Min(torch.get_num_threads(), Math.Max(1, Environment.ProcessorCount / LocalSize)));
        return torch.get_num_threads();
    }

    public void Barrier() => MpiNative.Check(MpiNative.Barrier(MpiNative.CommWorld), "MPI_Barrier");

    /// <summary>Sums <paramref name="values"/> over all ranks, in place.</summary>
    public void AllReduceSum(Span<double> values)
    {
        if (values.IsEmpty) return;
        fixed (double* p = values)
            MpiNative.Check(MpiNative.Allreduce(MpiNative.InPlace, p, values.Length, MpiNative.Double, MpiNative.OpSum, MpiNative.CommWorld), "MPI_Allreduce");
    }

    /// <summary>Sums <paramref name="values"/> over all ranks, in place.</summary>
    public void AllReduceSum(Span<long> values)
    {
        if (values.IsEmpty) return;
        fixed (long* p = values)
            MpiNative.Check(MpiNative.Allreduce(MpiNative.InPlace, p, values.Length, MpiNative.Int64, MpiNative.OpSum, MpiNative.CommWorld), "MPI_Allreduce");
    }

    /// <summary>Sums a float32 tensor over all ranks, in place.</summary>
    public void AllReduceSum(Tensor buffer)
    {
        int count = Count(buffer, nameof(buffer));
        if (count == 0) return;
        fixed (byte* p = buffer.bytes)
            MpiNative.Check(MpiNative.Allreduce(MpiNative.InPlace, p, count, MpiNative.Float, MpiNative.OpSum, MpiNative.CommWorld), "MPI_Allreduce");
    }

    /// <summary>Sums <paramref name="send"/> (Size × n floats) over all ranks and leaves block <see cref="Rank"/> of the
    /// sum (n floats) in <paramref name="receive"/>.</summary>
    public void ReduceScatterSum(Tensor send, Tensor receive)
    {
        int count = Count(receive, nameof(receive));
        if ((long)count * Size != Count(send, nameof(send)))
            throw new ArgumentException($"reduce-scatter: send holds {send.numel()} floats, expected {Size} × {count}.", nameof(send));
        if (count == 0) return;
        fixed (byte* s = send.bytes)
        fixed (byte* r = receive.bytes)
            MpiNative.Check(MpiNative.ReduceScatterBlock(s, r, count, MpiNative.Float, MpiNative.OpSum, MpiNative.CommWorld), "MPI_Reduce_scatter_block");
    }

    /// <summary>Each rank's block <see cref="Rank"/> of <paramref name="buffer"/> (Size equal blocks) goes to every
    /// rank, in place.</summary>
    public void AllGatherInPlace(Tensor buffer)
    {
        int total = Count(buffer, nameof(buffer));
        if (total % Size != 0) throw new ArgumentException($"all-gather: {total} floats do not split into {Size} equal blocks.", nameof(buffer));
        if (total == 0) return;
        fixed (byte* p = buffer.bytes)
            MpiNative.Check(MpiNative.Allgather(MpiNative.InPlace, 0, MpiNative.Float, p, total / Size, MpiNative.Float, MpiNative.CommWorld), "MPI_Allgather");
    }

    /// <summary>As <see cref="AllGatherInPlace"/> for a tensor of any element type (moved as bytes: nothing is
    /// reduced), e.g. a bf16 layer's weights.</summary>
    public void AllGatherBytesInPlace(Tensor buffer)
    {
        if (buffer.device_type != DeviceType.CPU || !buffer.is_contiguous() || buffer.storage_offset() != 0)
            throw new ArgumentException($"MPI buffers must be contiguous CPU tensors starting at their storage's offset 0 (got {buffer.dtype} on {buffer.device_type}).", nameof(buffer));
        long bytes = buffer.numel() * buffer.ElementSize;
        if (bytes % Size != 0) throw new ArgumentException($"all-gather: {bytes} bytes do not split into {Size} equal blocks.", nameof(buffer));
        if (bytes / Size > int.MaxValue) throw new ArgumentException($"all-gather: {bytes / Size} bytes per rank exceed one MPI call's int count.", nameof(buffer));
        if (bytes == 0) return;
        fixed (byte* p = buffer.bytes)
            MpiNative.Check(MpiNative.Allgather(MpiNative.InPlace, 0, MpiNative.Byte, p, (int)(bytes / Size), MpiNative.Byte, MpiNative.CommWorld), "MPI_Allgather");
    }

    /// <summary>Copies root's float32 tensor to every rank, in place.</summary>
    public void Broadcast(Tensor buffer, int root = 0)
    {
        int count = Count(buffer, nameof(buffer));
        if (count == 0) return;
        fixed (byte* p = buffer.bytes)
            MpiNative.Check(MpiNative.Bcast(p, count, MpiNative.Float, root, MpiNative.CommWorld), "MPI_Bcast");
    }

    /// <summary>Ends every process of the job with <paramref name="exitCode"/> (mpirun reports it); used when one rank
    /// fails, so the others do not wait for it forever inside a collective.</summary>
    public void Abort(int exitCode)
    {
        MpiNative.Abort(MpiNative.CommWorld, exitCode);
        Environment.Exit(exitCode);
    }

    static int Count(Tensor tensor, string name)
    {
        if (tensor.dtype != ScalarType.Float32 || tensor.device_type != DeviceType.CPU || !tensor.is_contiguous() || tensor.storage_offset() != 0)
            throw new ArgumentException($"MPI buffers must be contiguous float32 CPU tensors starting at their storage's offset 0 (got {tensor.dtype} on {tensor.device_type}).", name);
        long count = tensor.numel();
        if (count > int.MaxValue) throw new ArgumentException($"{count} floats exceed one MPI call's int count; lower distributed.bucket_mb.", name);
        return (int)count;
    }

    public void Dispose()
    {
        if (_finalized) return;
        _finalized = true;
        int finalized;
        if (MpiNative.Finalized(&finalized) == MpiNative.Success && finalized == 0) MpiNative.Finalize();
    }
}
