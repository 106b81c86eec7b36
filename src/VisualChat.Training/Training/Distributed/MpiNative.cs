using System.Runtime.InteropServices;

namespace VisualChat.Training.Distributed;

/// <summary>
/// The few MPI C calls distributed training needs, bound at run time to Open MPI's <c>libmpi.so.40</c> (Debian:
/// <c>openmpi-bin libopenmpi-dev</c>). Not the MPI.NET package (not tried): its project documents it for Microsoft's
/// MS-MPI, whose handles are ints where Open MPI's are pointers. Open MPI's predefined handles
/// (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, …) are the addresses of exported globals (<c>ompi_mpi_comm_world</c>, …), read
/// with <see cref="NativeLibrary.GetExport"/>. The library is loaded only by <see cref="Load"/>, which only an MPI job calls.
/// </summary>
internal static unsafe class MpiNative
{
    public const string LibraryName = "libmpi.so.40";
    public const int Success = 0;
    /// <summary>MPI_THREAD_SERIALIZED: any thread may call MPI, one at a time (the trainer's thread, whichever it is).</summary>
    public const int ThreadSerialized = 2;
    /// <summary>MPI_IN_PLACE is <c>(void*)1</c> in Open MPI.</summary>
    public static readonly void* InPlace = (void*)1;

    public static IntPtr CommWorld, Byte, Float, Double, Int64, OpSum;

    public static delegate* unmanaged<int*, byte***, int, int*, int> InitThread;
    public static delegate* unmanaged<int*, int> Initialized;
    public static delegate* unmanaged<int*, int> Finalized;
    public static delegate* unmanaged<int> Finalize;
    public static delegate* unmanaged<IntPtr, int*, int> CommRank;
    public static delegate* unmanaged<IntPtr, int*, int> CommSize;
    public static delegate* unmanaged<IntPtr, int> Barrier;
    public static delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int> Bcast;
    public static delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int> Allreduce;
    public static delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int> ReduceScatterBlock;
    public static delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int> Allgather;
    public static delegate* unmanaged<IntPtr, int, int> Abort;

    static IntPtr _library;

    [DllImport("libc", EntryPoint = "dlopen")]
    static extern IntPtr DlOpen(string file, int mode);

    [DllImport("libc", EntryPoint = "dlerror")]
    static extern IntPtr DlError();

    const int RtldNow = 2, RtldGlobal = 0x100;

    /// <summary>Loads libmpi once. RTLD_GLOBAL: Open MPI's plugins (mca_*.so), dlopen'ed by MPI_Init, resolve their
    /// symbols against libmpi/libopen-pal, which a local (.NET default) load would hide from them.</summary>
    public static void Load()
    {
        if (_library != IntPtr.Zero) return;
        var handle = DlOpen(LibraryName, RtldNow | RtldGlobal);
        if (handle == IntPtr.Zero)
        {
            var reason = Marshal.PtrToStringAnsi(DlError()) ?? "unknown reason";
            throw new DllNotFoundException(
                $"This process runs under mpirun (OMPI_COMM_WORLD_SIZE is set) but {LibraryName} cannot be loaded ({reason}); install Open MPI: apt-get install openmpi-bin libopenmpi-dev.");
        }
        IntPtr Symbol(string name) => NativeLibrary.GetExport(handle, name);
        CommWorld = Symbol("ompi_mpi_comm_world");
        Byte = Symbol("ompi_mpi_byte");
        Float = Symbol("ompi_mpi_float");
        Double = Symbol("ompi_mpi_double");
        Int64 = Symbol("ompi_mpi_int64_t");
        OpSum = Symbol("ompi_mpi_op_sum");
        InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Symbol("MPI_Init_thread");
        Initialized = (delegate* unmanaged<int*, int>)Symbol("MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Symbol("MPI_Finalized");
        Finalize = (delegate* unmanaged<int>)Symbol("MPI_Finalize");
        CommRank = (delegate* unmanaged<IntPtr, int*, int>)Symbol("MPI_Comm_rank");
        CommSize = (delegate* unmanaged<IntPtr, int*, int>)Symbol("MPI_Comm_size");
        Barrier = (delegate* unmanaged<IntPtr, int>)Symbol("MPI_Barrier");
        Bcast = (delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int>)Symbol("MPI_Bcast");
        Allreduce = (delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int>)Symbol("MPI_Allreduce");
        ReduceScatterBlock = (delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int>)Symbol("MPI_Reduce_scatter_block");
        Allgather = (delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int>)Symbol("MPI_Allgather");
        Abort = (delegate* unmanaged<IntPtr, int, int>)Symbol("MPI_Abort");
        _library = handle;
    }

    /// <summary>MPI_COMM_WORLD's error handler is MPI_ERRORS_ARE_FATAL, so a failing call normally aborts the job
    /// itself; this catches the rest.</summary>
    public static void Check(int code, string call)
    {
        if (code != Success) throw new InvalidOperationException($"{call} failed with MPI error code {code}.");
    }
}
