namespace VisualChat.Training.Distributed;

/// <summary>Whether this process was started by Open MPI's mpirun, read from the environment it sets for each rank,
/// so that a plain <c>vchat train</c> never loads libmpi.</summary>
public static class MpiLaunch
{
    public const string SizeVariable = "OMPI_COMM_WORLD_SIZE";
    public const string RankVariable = "OMPI_COMM_WORLD_RANK";
    public const string LocalSizeVariable = "OMPI_COMM_WORLD_LOCAL_SIZE";

    /// <summary>True under mpirun (any -np, 1 included).</summary>
    public static bool IsMpiJob => int.TryParse(Environment.GetEnvironmentVariable(SizeVariable), out int size) && size >= 1;

    /// <summary>This rank before MPI is initialised (for naming its log early); 0 outside mpirun.</summary>
    public static int RankFromEnvironment => int.TryParse(Environment.GetEnvironmentVariable(RankVariable), out int rank) ? rank : 0;
}
