using System.Diagnostics;

namespace VisualChat.Kernels;

/// <summary>Work that a <see cref="ThreadTeam"/> runs on every member at once; member <c>index</c> of <c>count</c>
/// takes its own share (the caller's thread is member 0).</summary>
internal interface ITeamWork
{
    void Execute(int index, int count);
}

/// <summary>
/// A persistent team of threads with a cheap fork/join, as llama.cpp and llama2.c's OpenMP loops have: a decode step
/// forks ~5 regions per layer of a few hundred microseconds each, where waking pool threads (Task, Parallel.For) or
/// libtorch's per-op dispatch would cost as much as the work. Members spin briefly between regions and sleep on a
/// semaphore when no region comes, so an idle team costs no CPU. Not re-entrant: one caller runs one region at a time.
/// </summary>
internal sealed class ThreadTeam : IDisposable
{
    /// <summary>How long a member spins for the next region before it sleeps: longer than the gap between the regions of
    /// one step (sampling, norms), far shorter than a user's pause.</summary>
    static readonly long SpinTicks = Stopwatch.Frequency / 5000;   // 200 µs

    static readonly Lazy<ThreadTeam> shared = new(() => new ThreadTeam(DefaultSize()));

    readonly Thread[] members;
    readonly SemaphoreSlim wake = new(0);
    readonly object runLock = new();
    ITeamWork? work;
    int generation;
    int pending;
    int sleepers;
    volatile bool disposed;
    Exception? failure;

    public ThreadTeam(int size)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), "A thread team needs at least one member.");
        Size = size;
        members = new Thread[size - 1];
        for (int i = 0; i < members.Length; i++) {
            int index = i + 1;
            members[i] = new Thread(() => MemberLoop(index)) { IsBackground = true, Name = $"VisualChat decode {index}" };
            members[i].Start();
        }
    }

    /// <summary>The process's team: one member per core, or <c>VISUALCHAT_THREADS</c>.</summary>
    public static ThreadTeam Shared => shared.Value;

    public int Size { get; }

    static int DefaultSize() =>
        int.TryParse(Environment.GetEnvironmentVariable("VISUALCHAT_THREADS"), out int n) && n > 0 ? n : Environment.ProcessorCount;

    /// <summary>Runs <paramref name="region"/> on every member and returns when all have finished; an exception in any
    /// member is rethrown here.</summary>
    public void Run(ITeamWork region)
    {
        lock (runLock) {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (members.Length == 0) {
                region.Execute(0, 1);
                return;
            }
            work = region;
            failure = null;
            Volatile.Write(ref pending, members.Length);
            Interlocked.Increment(ref generation);
            int asleep = Volatile.Read(ref sleepers);
            if (asleep > 0) wake.Release(asleep);
            try {
                region.Execute(0, Size);
            } finally {
                var spin = new SpinWait();
                while (Volatile.Read(ref pending) > 0) spin.SpinOnce(sleep1Threshold: -1);
                work = null;
            }
            if (failure is { } e) throw new AggregateException("A decode thread failed.", e);
        }
    }

    void MemberLoop(int index)
    {
        int seen = 0;
        while (true) {
            long spinStart = Stopwatch.GetTimestamp();
            int current;
            while ((current = Volatile.Read(ref generation)) == seen) {
                if (disposed) return;
                if (Stopwatch.GetTimestamp() - spinStart < SpinTicks) {
                    Thread.SpinWait(16);
                    continue;
                }
                Interlocked.Increment(ref sleepers);
                // Re-checked after announcing the sleep: a region started in between has seen this sleeper and released.
                if (Volatile.Read(ref generation) == seen && !disposed) wake.Wait();
                Interlocked.Decrement(ref sleepers);
                spinStart = Stopwatch.GetTimestamp();
            }
            seen = current;
            if (disposed) return;
            try {
                work!.Execute(index, Size);
            } catch (Exception e) {
                failure = e;
            }
            Interlocked.Decrement(ref pending);
        }
    }

    public void Dispose()
    {
        if (ReferenceEquals(this, shared.IsValueCreated ? shared.Value : null)) return;
        // Under the run lock: a member must never see the team disposed in the middle of a Run it has to join.
        lock (runLock) {
            if (disposed) return;
            disposed = true;
        }
        wake.Release(members.Length);
        foreach (var member in members) member.Join();
        wake.Dispose();
    }

    /// <summary>Member <paramref name="index"/>'s share [start, end) of <paramref name="total"/> items, in multiples of
    /// <paramref name="align"/> so row tiles are not split.</summary>
    public static (int start, int end) Share(int total, int index, int count, int align = 1)
    {
        int units = (total + align - 1) / align;
        int start = (int)((long)units * index / count) * align;
        int end = (int)((long)units * (index + 1) / count) * align;
        return (Math.Min(start, total), Math.Min(end, total));
    }
}
